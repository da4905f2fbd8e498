//! Real handshakes over loopback TCP between configurations built from certificates issued by
//! the same code `busbarctl certs` runs.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::pki::{CertDir, IssueRequest, PkiError};
use super::*;

/// A directory removed on drop (the agent crate has no dev-dependencies to bring `tempfile`).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("busbar-tls-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A cluster's worth of certificates: `node1` (agent), `gw` (gateway), `ops` (client).
struct Cluster {
    _tmp: TempDir,
    certs: CertDir,
}

fn issue(certs: &CertDir, name: &str, role: Role, sans: &[&str]) {
    let req = IssueRequest {
        name: name.to_owned(),
        role,
        sans: sans.iter().map(|s| s.to_string()).collect(),
        days: 30,
        force: false,
    };
    certs.issue(&req).expect("issue");
}

impl Cluster {
    fn new() -> Cluster {
        let tmp = TempDir::new();
        let certs = CertDir::new(tmp.0.join("certs"));
        certs.init_ca(false).expect("init CA");
        issue(
            &certs,
            "node1",
            Role::Agent,
            &["127.0.0.1", "node1.example.com"],
        );
        issue(&certs, "node2", Role::Agent, &[]);
        issue(&certs, "gw", Role::Gateway, &[]);
        issue(&certs, "ops", Role::Client, &[]);
        Cluster { _tmp: tmp, certs }
    }

    fn files(&self, name: &str) -> TlsFiles {
        self.certs.tls_files(name)
    }
}

/// What each side of a handshake ended with.
struct Outcome {
    /// The server's view: the client's identity and the negotiated ALPN, or the accept error.
    server: io::Result<(Identity, Option<Vec<u8>>)>,
    /// The client's view: the server's identity, or the connect/first-read error.
    client: io::Result<Identity>,
}

/// Runs one connection: server on 127.0.0.1:0, client dialling it as `server_name`.
///
/// With TLS 1.3 the client finishes its side of the handshake before the server has checked
/// the client certificate, so the client also reads one byte: a refusal arrives as an alert.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let acceptor = TlsAcceptor::from(server);
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let (_, conn) = tls.get_ref();
        let peer = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("mandatory client auth")
            .clone();
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        tls.write_all(b"!").await?;
        tls.shutdown().await?;
        let id = peer_identity(&peer).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok((id, alpn))
    });

    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    let client = async {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = TlsConnector::from(client).connect(name, tcp).await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("server cert")
            .clone();
        peer_identity(&peer).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    };
    let limit = Duration::from_secs(10);
    let client = tokio::time::timeout(limit, client)
        .await
        .expect("client side finishes");
    let server = tokio::time::timeout(limit, server_task)
        .await
        .expect("server side finishes")
        .expect("no panic");
    Outcome { server, client }
}

fn err_text(r: &io::Result<impl std::fmt::Debug>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn gateway_reaches_agent_and_both_know_who_is_there() {
    let c = Cluster::new();
    let server = server_config(&c.files("node1"), Role::Gateway).unwrap();
    let client = client_config(&c.files("gw"), Role::Agent).unwrap();

    let out = handshake(server, client, "node1").await;
    let (client_id, alpn) = out.server.expect("agent accepts the gateway");
    assert_eq!(
        client_id,
        Identity {
            name: "gw".into(),
            role: Role::Gateway
        }
    );
    assert_eq!(alpn.as_deref(), Some(ALPN_H2));
    assert_eq!(
        out.client.expect("gateway accepts the agent"),
        Identity {
            name: "node1".into(),
            role: Role::Agent
        }
    );
}

#[tokio::test]
async fn extra_sans_are_valid_server_names() {
    let c = Cluster::new();
    for name in ["node1.example.com", "127.0.0.1"] {
        let server = server_config(&c.files("node1"), Role::Gateway).unwrap();
        let client = client_config(&c.files("gw"), Role::Agent).unwrap();
        let out = handshake(server, client, name).await;
        assert!(
            out.client.is_ok() && out.server.is_ok(),
            "dialling as {name}"
        );
    }
}

/// Collects what `tracing` logs on this thread (the tests run on tokio's current-thread runtime,
/// so the server task's logs land here too).
#[derive(Clone, Default)]
struct LogBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

#[tokio::test]
async fn only_the_gateway_role_may_connect_to_an_agent() {
    let logs = LogBuf::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let c = Cluster::new();
    for (name, role) in [("ops", Role::Client), ("node2", Role::Agent)] {
        let server = server_config(&c.files("node1"), Role::Gateway).unwrap();
        // The intruder trusts the CA and would happily talk to an agent: only the role stops it.
        let client = client_config(&c.files(name), Role::Agent).unwrap();
        let out = handshake(server, client, "node1").await;

        let server_err = err_text(&out.server);
        assert!(
            server_err.contains(&format!(
                "peer certificate CN={name} has role {role}; only gateway may connect"
            )),
            "server error: {server_err}"
        );
        let client_err = err_text(&out.client);
        assert!(client_err.contains("alert"), "client error: {client_err}");
    }
    // The operator reads why in the agent's log.
    let logs = logs.text();
    for line in [
        "refusing TLS client: peer certificate CN=ops has role client; only gateway may connect",
        "refusing TLS client: peer certificate CN=node2 has role agent; only gateway may connect",
    ] {
        assert!(
            logs.lines()
                .any(|l| l.contains(" WARN ") && l.contains(line)),
            "{line:?} not in:\n{logs}"
        );
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_both_ways() {
    let c = Cluster::new();
    let rogue_tmp = TempDir::new();
    let rogue = CertDir::new(&rogue_tmp.0);
    rogue.init_ca(false).unwrap();
    issue(&rogue, "gw", Role::Gateway, &[]);
    issue(&rogue, "node1", Role::Agent, &[]);
    // The rogue side knows the real CA certificate (it is public): only its own chain is wrong.
    let rogue_files =
        |name: &str| TlsFiles::new(c.certs.ca_cert(), rogue.cert(name), rogue.key(name));

    // A gateway certificate from another CA, calling a real agent.
    let server = server_config(&c.files("node1"), Role::Gateway).unwrap();
    let client = client_config(&rogue_files("gw"), Role::Agent).unwrap();
    let out = handshake(server, client, "node1").await;
    let server_err = err_text(&out.server);
    assert!(
        server_err.contains("UnknownIssuer"),
        "server error: {server_err}"
    );
    assert!(out.client.is_err());

    // A real gateway calling an agent certificate from another CA.
    let server = server_config(&rogue_files("node1"), Role::Gateway).unwrap();
    let client = client_config(&c.files("gw"), Role::Agent).unwrap();
    let out = handshake(server, client, "node1").await;
    let client_err = err_text(&out.client);
    assert!(
        client_err.contains("UnknownIssuer"),
        "client error: {client_err}"
    );
    assert!(out.server.is_err());
}

#[tokio::test]
async fn the_gateway_refuses_an_agent_that_is_not_the_node_it_dialled() {
    let c = Cluster::new();
    let server = server_config(&c.files("node1"), Role::Gateway).unwrap();
    let client = client_config(&c.files("gw"), Role::Agent).unwrap();
    let out = handshake(server, client, "node2").await;
    let client_err = err_text(&out.client);
    assert!(
        client_err.contains("not valid for name \"node2\""),
        "client error: {client_err}"
    );
    assert!(out.server.is_err());
}

#[tokio::test]
async fn a_gateway_certificate_cannot_pose_as_an_agent() {
    let c = Cluster::new();
    let server = server_config(&c.files("gw"), Role::Gateway).unwrap();
    let client = client_config(&c.files("gw"), Role::Agent).unwrap();
    let out = handshake(server, client, "gw").await;
    let client_err = err_text(&out.client);
    assert!(
        client_err.contains("server certificate CN=gw has role gateway; expected agent"),
        "client error: {client_err}"
    );
    assert!(out.server.is_err());
}

#[tokio::test]
async fn a_client_certificate_cannot_serve_at_all() {
    let c = Cluster::new();
    // Client certificates lack serverAuth: WebPKI refuses them before the role is even read.
    let server = server_config(&c.files("ops"), Role::Gateway).unwrap();
    let client = client_config(&c.files("gw"), Role::Client).unwrap();
    let out = handshake(server, client, "ops").await;
    let client_err = err_text(&out.client);
    assert!(
        client_err.contains("server authentication"),
        "client error: {client_err}"
    );
}

#[test]
fn key_files_and_the_directory_are_private() {
    let c = Cluster::new();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&c.certs.ca_key()), 0o600);
    assert_eq!(mode(&c.certs.key("node1")), 0o600);
    assert_eq!(mode(&c.certs.key("ops")), 0o600);
    assert_eq!(mode(c.certs.path()), 0o700);
}

#[test]
fn init_refuses_to_replace_a_ca_unless_forced() {
    let c = Cluster::new();
    let before = std::fs::read(c.certs.ca_cert()).unwrap();
    match c.certs.init_ca(false) {
        Err(PkiError::CaExists { .. }) => {}
        other => panic!("expected CaExists, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(c.certs.ca_cert()).unwrap(),
        before,
        "the CA is untouched"
    );

    let written = c.certs.init_ca(true).unwrap();
    assert!(written.replaced);
    assert_ne!(std::fs::read(c.certs.ca_cert()).unwrap(), before);
    assert_eq!(
        std::fs::metadata(c.certs.ca_key())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[test]
fn issue_needs_a_ca_and_explains_how_to_make_one() {
    let tmp = TempDir::new();
    let certs = CertDir::new(&tmp.0);
    let req = IssueRequest {
        name: "node1".into(),
        role: Role::Agent,
        sans: vec![],
        days: 30,
        force: false,
    };
    let err = certs.issue(&req).unwrap_err();
    let dir = tmp.0.display();
    assert_eq!(
        err.to_string(),
        format!("no cluster CA in {dir}: run `busbarctl certs init --dir {dir}` first")
    );
}

#[test]
fn issue_refuses_to_overwrite_and_bad_names() {
    let c = Cluster::new();
    let req = |name: &str| IssueRequest {
        name: name.into(),
        role: Role::Agent,
        sans: vec![],
        days: 30,
        force: false,
    };
    assert!(matches!(
        c.certs.issue(&req("node1")),
        Err(PkiError::LeafExists { .. })
    ));
    assert!(c
        .certs
        .issue(&IssueRequest {
            force: true,
            ..req("node1")
        })
        .is_ok());
    for bad in ["ca", "x-key", "10.0.0.1", "a/b", "", "node1."] {
        assert!(
            matches!(c.certs.issue(&req(bad)), Err(PkiError::InvalidName { .. })),
            "{bad:?}"
        );
    }
    let bad_san = IssueRequest {
        sans: vec!["not a name".into()],
        ..req("node3")
    };
    assert!(matches!(
        c.certs.issue(&bad_san),
        Err(PkiError::InvalidSan { .. })
    ));
    assert!(matches!(
        c.certs.issue(&IssueRequest {
            days: 0,
            ..req("node3")
        }),
        Err(PkiError::InvalidDays { .. })
    ));
}

#[test]
fn the_role_is_read_from_the_ou_and_nowhere_else() {
    let c = Cluster::new();
    // A node may be called "gateway": it is still an agent.
    issue(&c.certs, "gateway", Role::Agent, &[]);
    let id = c.files("gateway").identity().unwrap();
    assert_eq!(
        id,
        Identity {
            name: "gateway".into(),
            role: Role::Agent
        }
    );

    // The CA certificate has no role, so it is not a usable leaf.
    let files = TlsFiles::new(c.certs.ca_cert(), c.certs.ca_cert(), c.certs.ca_key());
    let err = server_config(&files, Role::Gateway).unwrap_err();
    assert!(matches!(err, TlsError::NotBusbarCert { .. }), "{err}");
}

#[test]
fn roles_round_trip_through_text() {
    for role in Role::ALL {
        assert_eq!(role.to_string().parse::<Role>(), Ok(role));
    }
    assert_eq!(
        "admin".parse::<Role>().unwrap_err().to_string(),
        "unknown role \"admin\": expected agent, gateway, client or adapter"
    );
}

#[test]
fn loading_names_the_file_at_fault() {
    let c = Cluster::new();
    let good = c.files("node1");
    let load = |files: TlsFiles| server_config(&files, Role::Gateway).unwrap_err();

    let missing = c.certs.path().join("nope.pem");
    let err = load(TlsFiles {
        ca: missing.clone(),
        ..good.clone()
    });
    assert!(matches!(err, TlsError::Missing { .. }));
    assert_eq!(
        err.to_string(),
        format!("CA certificate {} does not exist", missing.display())
    );

    // A key where the certificate should be.
    let err = load(TlsFiles {
        cert: good.key.clone(),
        ..good.clone()
    });
    assert!(
        matches!(&err, TlsError::NoCertificate { path, .. } if *path == good.key),
        "{err}"
    );

    // A certificate where the key should be.
    let err = load(TlsFiles {
        key: good.cert.clone(),
        ..good.clone()
    });
    assert!(
        matches!(&err, TlsError::NoKey { path } if *path == good.cert),
        "{err}"
    );

    // Someone else's key.
    let err = load(TlsFiles {
        key: c.certs.key("gw"),
        ..good.clone()
    });
    assert!(matches!(&err, TlsError::KeyMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("gw-key.pem does not belong to certificate"),
        "{err}"
    );

    // Not PEM at all.
    let junk = c.certs.path().join("junk.pem");
    std::fs::write(&junk, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let err = load(TlsFiles {
        ca: junk,
        ..good.clone()
    });
    assert!(matches!(&err, TlsError::BadPem { .. }), "{err}");
}

#[test]
fn certificates_outside_their_validity_are_refused_at_start() {
    let cert = |not_before: (i32, u8, u8), not_after: (i32, u8, u8)| {
        let mut params = rcgen::CertificateParams::new(vec!["node1".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        CertificateDer::from(params.self_signed(&key).unwrap().der().to_vec())
    };
    let path = Path::new("/etc/busbar/node1.pem");
    // 2026-01-01 00:00:00 UTC.
    let now = 1_767_225_600;
    let expired = check_validity("certificate", path, &cert((2020, 1, 1), (2025, 1, 1)), now)
        .unwrap_err()
        .to_string();
    assert!(
        expired.starts_with("certificate /etc/busbar/node1.pem expired on Wed, 01 Jan 2025"),
        "{expired}"
    );
    let early = check_validity("certificate", path, &cert((2030, 1, 1), (2031, 1, 1)), now)
        .unwrap_err()
        .to_string();
    assert!(
        early.contains("is not valid before Tue, 01 Jan 2030"),
        "{early}"
    );
    check_validity("certificate", path, &cert((2025, 1, 1), (2027, 1, 1)), now).unwrap();
}

// === TLS for Docker clients (docker::docker_server_config) ===

/// A CA that is not busbar's (as `openssl req -x509` would make one) in `dir`: `ca.pem`, a
/// server certificate for 127.0.0.1 (`server.pem`, `server-key.pem`) and a client certificate
/// `CN=alice` without any busbar role (`alice.pem`, `alice-key.pem`).
fn plain_ca(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, PKCS_ECDSA_P384_SHA384,
    };
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "Example Corp CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |name: &str, params: CertificateParams| {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    };
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf("server", server);
    let mut alice = CertificateParams::new(Vec::<String>::new()).unwrap();
    alice.distinguished_name.push(DnType::CommonName, "alice");
    alice.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf("alice", alice);
}

/// A Docker client's TLS settings (`--tlscacert`, and `--tlscert/--tlskey` if `me` is given),
/// TLS 1.2 only if `tls12`.
fn docker_client(ca: &Path, me: Option<(&Path, &Path)>, tls12: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in read_certs("CA certificate", ca).unwrap() {
        roots.add(c).unwrap();
    }
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match me {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                read_certs("certificate", cert).unwrap(),
                rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// One connection to `server` as a Docker client would make it: the CN the server saw (`""`
/// when the client sent no certificate), or the error of either side.
async fn docker_handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> Result<String, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server);
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let cn = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(docker::common_name)
            .unwrap_or_default();
        tls.write_all(b"!").await?;
        tls.shutdown().await?;
        Ok::<_, io::Error>(cn)
    });
    let client = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = TlsConnector::from(client).connect(name, tcp).await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        Ok::<_, io::Error>(())
    };
    let limit = Duration::from_secs(10);
    let client = tokio::time::timeout(limit, client)
        .await
        .expect("client ends");
    let server = tokio::time::timeout(limit, server_task)
        .await
        .expect("server ends")
        .expect("no panic");
    match (server, client) {
        (Ok(cn), Ok(())) => Ok(cn),
        (s, c) => Err(format!(
            "server: {}; client: {}",
            s.err().map(|e| e.to_string()).unwrap_or_default(),
            c.err().map(|e| e.to_string()).unwrap_or_default()
        )),
    }
}

#[tokio::test]
async fn docker_clients_of_the_operators_ca_get_in_and_are_named_by_their_cn() {
    let tmp = TempDir::new();
    let d = tmp.0.join("plain");
    plain_ca(&d);
    let files = ClientTlsFiles {
        ca: Some(d.join("ca.pem")),
        cert: d.join("server.pem"),
        key: d.join("server-key.pem"),
    };
    let server = docker_server_config(&files).unwrap();
    let alice = Some((d.join("alice.pem"), d.join("alice-key.pem")));
    let alice = alice.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
    for tls12 in [false, true] {
        let client = docker_client(&d.join("ca.pem"), alice, tls12);
        assert_eq!(
            docker_handshake(server.clone(), client).await.as_deref(),
            Ok("alice"),
            "tls12: {tls12}"
        );
    }
    // No certificate, or one from another CA: refused in the handshake.
    let client = docker_client(&d.join("ca.pem"), None, false);
    let err = docker_handshake(server.clone(), client).await.unwrap_err();
    assert!(
        err.contains("CertificateRequired") || err.contains("certificate"),
        "{err}"
    );
    let c = Cluster::new();
    let ops = (c.certs.cert("ops"), c.certs.key("ops"));
    let client = docker_client(&d.join("ca.pem"), Some((&ops.0, &ops.1)), false);
    let err = docker_handshake(server, client).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn with_busbars_ca_only_the_client_role_gets_in() {
    let c = Cluster::new();
    issue(&c.certs, "gw-docker", Role::Gateway, &["127.0.0.1"]);
    let files = ClientTlsFiles {
        ca: Some(c.certs.ca_cert()),
        cert: c.certs.cert("gw-docker"),
        key: c.certs.key("gw-docker"),
    };
    assert!(docker::is_busbar_ca(
        &read_certs("CA", &c.certs.ca_cert()).unwrap()[0]
    ));
    let server = docker_server_config(&files).unwrap();
    let client_of = |name: &str| {
        let (cert, key) = (c.certs.cert(name), c.certs.key(name));
        docker_client(&c.certs.ca_cert(), Some((&cert, &key)), false)
    };
    assert_eq!(
        docker_handshake(server.clone(), client_of("ops"))
            .await
            .as_deref(),
        Ok("ops")
    );
    for (name, role) in [("node1", "agent"), ("gw", "gateway")] {
        let err = docker_handshake(server.clone(), client_of(name))
            .await
            .unwrap_err();
        assert!(
            err.contains(&format!(
                "CN={name} has role {role}; only client may connect"
            )),
            "{name}: {err}"
        );
    }
}

#[tokio::test]
async fn without_tlsverify_no_client_certificate_is_asked_for() {
    let tmp = TempDir::new();
    let d = tmp.0.join("plain");
    plain_ca(&d);
    let files = ClientTlsFiles {
        ca: None,
        cert: d.join("server.pem"),
        key: d.join("server-key.pem"),
    };
    let server = docker_server_config(&files).unwrap();
    let client = docker_client(&d.join("ca.pem"), None, false);
    assert_eq!(docker_handshake(server, client).await.as_deref(), Ok(""));
    // A key that is not the certificate's names both files.
    let files = ClientTlsFiles {
        ca: None,
        cert: d.join("server.pem"),
        key: d.join("alice-key.pem"),
    };
    let err = docker_server_config(&files).unwrap_err().to_string();
    assert!(
        err.contains("alice-key.pem") && err.contains("server.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn reload_all_presents_a_replaced_certificate_and_keeps_it_when_a_file_breaks() {
    let c = Cluster::new();
    issue(&c.certs, "gw2", Role::Gateway, &[]);
    let server = server_config(&c.files("node1"), Role::Gateway).unwrap();
    let gw = c.files("gw");
    let client = client_config(&gw, Role::Agent).unwrap();
    let who = |out: Outcome| out.server.expect("the agent accepts the gateway").0.name;
    assert_eq!(
        who(handshake(server.clone(), client.clone(), "node1").await),
        "gw"
    );

    // Renewed in place: gw's files now hold gw2's certificate and key.
    let renewed = c.files("gw2");
    std::fs::copy(&renewed.cert, &gw.cert).unwrap();
    std::fs::copy(&renewed.key, &gw.key).unwrap();
    let outcome = |all: Vec<Reloaded>| {
        all.into_iter()
            .find(|r| r.cert == gw.cert)
            .expect("the gateway's certificate is reloadable")
            .outcome
    };
    assert!(matches!(outcome(reload_all()), Ok(true)));
    assert_eq!(
        who(handshake(server.clone(), client.clone(), "node1").await),
        "gw2"
    );

    // A broken file is refused, naming it; the certificate in use stays.
    std::fs::write(&gw.cert, "not a certificate").unwrap();
    let refused = outcome(reload_all()).expect_err("a broken file is refused");
    assert!(refused.to_string().contains("gw.pem"), "{refused}");
    assert_eq!(who(handshake(server, client, "node1").await), "gw2");
}
