//! busbar-etcd-client against a real etcd: private instances of Debian's `etcd` on free loopback
//! ports, in temporary directories, killed when the test ends (even when it fails).
//!
//! Without `etcd` (and `etcdctl`) on PATH each test prints why and passes, unless
//! `BUSBAR_E2E=require`, which makes that a failure.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use busbar_etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, Error, EventType,
    GetOptions, Identity, LeaseTimeToLiveOptions, PutOptions, TlsOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions, WatchResponse, WatchStream,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Long enough for anything a healthy local etcd does; a hung test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(20);

/// Whether `etcd` and `etcdctl` are there; if not, says so, and fails with
/// `BUSBAR_E2E=require`.
fn have_etcd() -> bool {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    let missing: Vec<&str> = ["etcd", "etcdctl"]
        .into_iter()
        .filter(|n| !on_path(n))
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("BUSBAR_E2E").as_deref() != Ok("require"),
        "BUSBAR_E2E=require, but {} not on PATH (Debian: apt-get install etcd-server etcd-client)",
        missing.join(" and ")
    );
    eprintln!(
        "skipped: {} not on PATH (Debian: apt-get install etcd-server etcd-client; \
         BUSBAR_E2E=require makes this a failure)",
        missing.join(" and ")
    );
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Runs `fut` within [`PATIENCE`].
async fn soon<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {PATIENCE:?}"))
}

/// The error's message and every cause after it, joined: what a caller walking
/// `std::error::Error::source` sees.
fn chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text = format!("{text} <- {c}");
        cause = c.source();
    }
    text
}

/// How etcd serves clients.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Serve {
    Plain,
    Tls,
    /// TLS, and clients must present a certificate from the CA.
    MutualTls,
}

/// A single-member etcd, killed (and its directory removed) when dropped.
struct Etcd {
    /// `http://127.0.0.1:PORT` or `https://...`.
    url: String,
    port: u16,
    child: Child,
    etcdctl_tls: Vec<String>,
    dir: tempfile::TempDir,
}

impl Etcd {
    fn start(serve: Serve, pki: Option<&Pki>, extra: &[&str]) -> Etcd {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (port, peer_port) = (free_port(), free_port());
        let scheme = if serve == Serve::Plain {
            "http"
        } else {
            "https"
        };
        let url = format!("{scheme}://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd.log");
        let mut cmd = Command::new("etcd");
        cmd.arg("--name=t")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=t={peer}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd.log"))
            .stderr(log);
        let mut etcdctl_tls = Vec::new();
        if serve != Serve::Plain {
            let pki = pki.expect("TLS needs certificates");
            let p = |p: &Path| p.display().to_string();
            cmd.arg(format!("--cert-file={}", p(&pki.server.0)))
                .arg(format!("--key-file={}", p(&pki.server.1)));
            etcdctl_tls.push(format!("--cacert={}", p(&pki.ca)));
            if serve == Serve::MutualTls {
                cmd.arg(format!("--trusted-ca-file={}", p(&pki.ca)))
                    .arg("--client-cert-auth");
                etcdctl_tls.push(format!("--cert={}", p(&pki.client.0)));
                etcdctl_tls.push(format!("--key={}", p(&pki.client.1)));
            }
        }
        let child = cmd.spawn().expect("etcd starts");
        let etcd = Etcd {
            url,
            port,
            child,
            etcdctl_tls,
            dir,
        };
        let deadline = Instant::now() + PATIENCE;
        while !etcd.etcdctl(&["endpoint", "health"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy; its log:\n{}",
                etcd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        etcd
    }

    fn plain(extra: &[&str]) -> Etcd {
        Etcd::start(Serve::Plain, None, extra)
    }

    /// `ETCDCTL_API=3 etcdctl` with this etcd's endpoint and TLS files.
    fn etcdctl(&self, args: &[&str]) -> Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.url))
            .args(["--dial-timeout=1s", "--command-timeout=3s"])
            .args(&self.etcdctl_tls)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("etcdctl runs")
    }

    /// Runs etcdctl and insists that it works.
    fn etcdctl_ok(&self, args: &[&str]) {
        let out = self.etcdctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Sends a signal (`STOP`, `CONT`) to etcd.
    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} etcd");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Certificates for a TLS etcd, made here.
struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
    /// A CA that signed nothing etcd has.
    other_ca: PathBuf,
    _dir: tempfile::TempDir,
}

fn ca(name: &str) -> (CertificateParams, KeyPair) {
    let key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(vec![]).expect("CA parameters");
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
    let key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(vec![]).expect("parameters");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = usages;
    params.subject_alt_names = sans;
    let cert = params
        .signed_by(&key, issuer)
        .expect("a signed certificate");
    let paths = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&paths.0, cert.pem()).expect("write a certificate");
    std::fs::write(&paths.1, key.serialize_pem()).expect("write a key");
    paths
}

impl Pki {
    fn make() -> Pki {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (params, key) = ca("busbar-etcd test CA");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, params.self_signed(&key).expect("CA").pem()).expect("write");
        let issuer = Issuer::new(params, key);
        // clientAuth too: etcd dials its own client URL with it (its gRPC gateway).
        let both = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let sans = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::DnsName("localhost".try_into().expect("a DNS name")),
        ];
        let server = leaf(dir.path(), "server", &issuer, both, sans);
        let client = leaf(
            dir.path(),
            "client",
            &issuer,
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            vec![],
        );
        let (other, other_key) = ca("another CA");
        let other_ca = dir.path().join("other-ca.pem");
        let other_pem = other.self_signed(&other_key).expect("CA").pem();
        std::fs::write(&other_ca, other_pem).expect("write");
        Pki {
            ca: ca_path,
            server,
            client,
            other_ca,
            _dir: dir,
        }
    }

    fn tls(&self, ca: &Path, identity: bool) -> TlsOptions {
        let read = |p: &Path| std::fs::read(p).expect("a PEM file");
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)));
        if identity {
            tls = tls.identity(Identity::from_pem(
                read(&self.client.0),
                read(&self.client.1),
            ));
        }
        tls
    }
}

async fn connect(url: &str) -> Client {
    soon("connect", Client::connect([url], None))
        .await
        .expect("a client")
}

/// Reads the stream until `n` events came; fails after [`PATIENCE`].
async fn events(stream: &mut WatchStream, n: usize) -> Vec<busbar_etcd_client::Event> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let msg: WatchResponse = soon("watch", stream.message())
            .await
            .expect("a watch answer")
            .expect("the watch stream goes on");
        assert!(!msg.canceled(), "watch canceled: {}", msg.cancel_reason());
        seen.extend(msg.events().iter().cloned());
    }
    seen
}

#[tokio::test]
async fn put_get_prefix_and_delete() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::plain(&[]);
    let c = connect(&etcd.url).await;
    let status = c.status().await.expect("status");
    assert!(status.version().starts_with("3."), "{}", status.version());

    let put = c.put("/p/a", "1", None).await.expect("put");
    let rev = put.header().expect("a header").revision();
    assert!(rev > 1);
    c.put("/p/b", "2", None).await.expect("put");
    c.put("/q/c", "3", None).await.expect("put");
    let prev = c
        .put("/p/a", "1b", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put");
    assert_eq!(prev.prev_key().map(|kv| kv.value()), Some(&b"1"[..]));

    let one = c.get("/p/a", None).await.expect("get");
    assert_eq!(one.count(), 1);
    let kv = &one.kvs()[0];
    assert_eq!(
        (kv.key_str().unwrap(), kv.value_str().unwrap()),
        ("/p/a", "1b")
    );
    assert_eq!(
        (kv.create_revision(), kv.version(), kv.lease()),
        (rev, 2, 0)
    );
    assert!(kv.mod_revision() > rev);

    let mut all = c
        .get("/p/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("prefix get");
    let keys: Vec<String> = all
        .take_kvs()
        .into_iter()
        .map(|kv| String::from_utf8(kv.into_key_value().0).unwrap())
        .collect();
    assert_eq!(keys, ["/p/a", "/p/b"]);
    let limited = c
        .get("/p/", Some(GetOptions::new().with_prefix().with_limit(1)))
        .await
        .expect("limited get");
    assert_eq!(
        (limited.kvs().len(), limited.more(), limited.count()),
        (1, true, 2)
    );
    let old = c
        .get("/p/a", Some(GetOptions::new().with_revision(rev)))
        .await
        .expect("get at a revision");
    assert_eq!(old.kvs()[0].value(), b"1");

    let gone = c.delete("/p/a", None).await.expect("delete");
    assert_eq!(gone.deleted(), 1);
    let gone = c
        .delete(
            "/p/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .expect("prefix delete");
    assert_eq!(gone.deleted(), 1);
    assert_eq!(gone.prev_kvs()[0].key(), b"/p/b");
    let rest = c
        .get("", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(rest.kvs().len(), 1, "only /q/c is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_create_once_and_compare_mod_revision() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::plain(&[]);
    let c = connect(&etcd.url).await;
    // Two creators at once: exactly one wins, the other sees the winner's value.
    let create = |who: &'static str| {
        let c = c.clone();
        tokio::spawn(async move {
            let txn = Txn::new()
                .when([Compare::create_revision("/names/x", CompareOp::Equal, 0)])
                .and_then([TxnOp::put("/names/x", who, None)])
                .or_else([TxnOp::get("/names/x", None)]);
            (who, c.txn(txn).await.expect("txn"))
        })
    };
    let (a, b) = (create("a"), create("b"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert!(
        a.1.succeeded() != b.1.succeeded(),
        "exactly one creator wins"
    );
    let (winner, loser) = if a.1.succeeded() { (a, b) } else { (b, a) };
    assert!(matches!(winner.1.op_responses(), [TxnOpResponse::Put(_)]));
    let [TxnOpResponse::Get(held)] = loser.1.op_responses() else {
        panic!("the loser's txn reads the key: {:?}", loser.1);
    };
    assert_eq!(held.kvs()[0].value_str().unwrap(), winner.0);

    // Compare-and-swap on mod_revision: the current one wins, a stale one loses.
    let now = c.get("/names/x", None).await.unwrap().kvs()[0].mod_revision();
    let swap = |rev, value: &str| {
        Txn::new()
            .when([Compare::mod_revision("/names/x", CompareOp::Equal, rev)])
            .and_then([TxnOp::put("/names/x", value, None)])
            .or_else([TxnOp::get("/names/x", None)])
    };
    let won = c.txn(swap(now, "c")).await.unwrap();
    assert!(won.succeeded());
    assert!(won.header().unwrap().revision() > now);
    let lost = c.txn(swap(now, "d")).await.unwrap();
    assert!(!lost.succeeded());
    let [TxnOpResponse::Get(get)] = lost.op_responses() else {
        panic!("{lost:?}");
    };
    assert_eq!(get.kvs()[0].value(), b"c");

    // A value compare, and a delete in a transaction.
    let del = Txn::new()
        .when([Compare::value("/names/x", CompareOp::Equal, "c")])
        .and_then([TxnOp::delete("/names/x", None)]);
    let done = c.txn(del).await.unwrap();
    assert!(done.succeeded());
    assert!(matches!(done.op_responses(), [TxnOpResponse::Delete(d)] if d.deleted() == 1));
}

#[tokio::test]
async fn watch_from_a_revision_sees_puts_and_deletes_in_order() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::plain(&[]);
    let c = connect(&etcd.url).await;
    let first = c.put("/w/a", "1", None).await.unwrap();
    let from = first.header().unwrap().revision();
    c.put("/w/b", "2", None).await.unwrap();
    c.put("/elsewhere", "x", None).await.unwrap();
    c.delete("/w/a", None).await.unwrap();

    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(from)
        .with_prev_key();
    let (watcher, mut stream) = soon("watch", c.watch("/w/", Some(options)))
        .await
        .expect("watch");
    let created = stream.message().await.unwrap().expect("the created answer");
    assert!(created.created() && !created.canceled());
    assert_eq!(created.watch_id(), watcher.watch_id());

    let seen = events(&mut stream, 3).await;
    let shown: Vec<(EventType, &str)> = seen
        .iter()
        .map(|e| (e.event_type(), e.kv().unwrap().key_str().unwrap()))
        .collect();
    assert_eq!(
        shown,
        [
            (EventType::Put, "/w/a"),
            (EventType::Put, "/w/b"),
            (EventType::Delete, "/w/a")
        ]
    );
    assert_eq!(seen[0].kv().unwrap().mod_revision(), from);
    assert_eq!(seen[2].prev_kv().map(|kv| kv.value()), Some(&b"1"[..]));

    // Live changes, then cancel.
    c.put("/w/c", "3", None).await.unwrap();
    let live = events(&mut stream, 1).await;
    assert_eq!(live[0].kv().unwrap().value(), b"3");
    assert!(
        live[0].prev_kv().is_none(),
        "a new key has no previous value"
    );
    watcher.cancel().await.expect("cancel");
    let canceled = soon("cancel", stream.message()).await.unwrap().unwrap();
    assert!(canceled.canceled(), "{canceled:?}");

    // Without prev_key, and with the Watcher dropped at once: the stream still works.
    let (_, mut stream) = c.watch("/w/c", None).await.unwrap();
    assert!(stream.message().await.unwrap().unwrap().created());
    c.put("/w/c", "4", None).await.unwrap();
    let e = events(&mut stream, 1).await;
    assert!(e[0].prev_kv().is_none());
    assert_eq!(e[0].kv().unwrap().value(), b"4");
}

#[tokio::test]
async fn leases_keep_keys_alive_until_revoked_or_expired() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::plain(&[]);
    let c = connect(&etcd.url).await;
    let lease = c.lease_grant(2, None).await.expect("grant");
    assert!(lease.id() != 0 && lease.ttl() >= 2, "{lease:?}");
    c.put("/l/k", "v", Some(PutOptions::new().with_lease(lease.id())))
        .await
        .unwrap();
    let kv = c.get("/l/k", None).await.unwrap().kvs()[0].clone();
    assert_eq!(kv.lease(), lease.id());

    // Kept alive for twice its TTL and more.
    let (keeper, mut answers) = soon("keep-alive", c.lease_keep_alive(lease.id()))
        .await
        .expect("keep-alive");
    assert_eq!(keeper.id(), lease.id());
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        keeper.keep_alive().await.expect("keep-alive request");
        let a = soon("keep-alive answer", answers.message())
            .await
            .unwrap()
            .expect("an answer");
        assert_eq!(a.id(), lease.id());
        assert!(a.ttl() > 0, "{a:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(c.get("/l/k", None).await.unwrap().count(), 1, "kept alive");

    let ttl = c
        .lease_time_to_live(lease.id(), Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.keys(), [b"/l/k".to_vec()]);
    assert_eq!(ttl.granted_ttl(), lease.ttl());
    assert!((0..=lease.ttl()).contains(&ttl.ttl()), "{ttl:?}");

    // Revoked: the key goes, and the lease can no longer be kept alive.
    c.lease_revoke(lease.id()).await.expect("revoke");
    assert_eq!(c.get("/l/k", None).await.unwrap().count(), 0);
    keeper.keep_alive().await.unwrap();
    let a = soon("answer", answers.message()).await.unwrap().unwrap();
    assert_eq!(a.ttl(), 0, "a revoked lease");
    let e = c.lease_keep_alive(lease.id()).await.unwrap_err();
    assert!(
        matches!(e, Error::LeaseNotFound(id) if id == lease.id()),
        "{e}"
    );
    let gone = c.lease_time_to_live(lease.id(), None).await.unwrap();
    assert_eq!(gone.ttl(), -1);

    // Left alone past its TTL, a lease expires: the keep-alive answer says TTL 0.
    let lease = c.lease_grant(2, None).await.unwrap();
    let (keeper, mut answers) = c.lease_keep_alive(lease.id()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(lease.ttl() as u64 + 2)).await;
    keeper.keep_alive().await.unwrap();
    let a = soon("answer", answers.message()).await.unwrap().unwrap();
    assert_eq!((a.id(), a.ttl()), (lease.id(), 0), "an expired lease");
}

/// Starts etcd with `root` (password `pw`) and authentication on.
fn etcd_with_auth(extra: &[&str]) -> Etcd {
    let etcd = Etcd::plain(extra);
    etcd.etcdctl_ok(&["user", "add", "root:pw"]);
    etcd.etcdctl_ok(&["auth", "enable"]);
    etcd
}

fn as_root(password: &str) -> Option<ConnectOptions> {
    Some(ConnectOptions::new().with_user("root", password))
}

#[tokio::test]
async fn a_user_and_password() {
    if !have_etcd() {
        return;
    }
    let etcd = etcd_with_auth(&[]);
    let c = soon("connect", Client::connect([&etcd.url], as_root("pw")))
        .await
        .expect("the right password");
    c.put("/a/k", "v", None).await.expect("put as root");
    assert_eq!(c.get("/a/k", None).await.unwrap().count(), 1);
    let (_, mut stream) = c
        .watch("/a/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(!stream.message().await.unwrap().unwrap().canceled());

    let e = soon("connect", Client::connect([&etcd.url], as_root("wrong")))
        .await
        .expect_err("a wrong password fails at connect");
    println!("wrong password: {e}");
    assert!(e.to_string().contains("authentication failed"), "{e}");
    assert!(matches!(&e, Error::Status(s) if s.code() == tonic::Code::InvalidArgument));

    // No user: connecting is lazy, the call is refused.
    let anonymous = connect(&etcd.url).await;
    let e = anonymous.get("/a/k", None).await.expect_err("refused");
    println!("no user: {e}");
    assert!(matches!(e, Error::Status(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_renewed() {
    if !have_etcd() {
        return;
    }
    // Simple tokens expire after 1 s unused.
    let etcd = etcd_with_auth(&["--auth-token=simple", "--auth-token-ttl=1"]);
    let c = Client::connect([&etcd.url], as_root("pw")).await.unwrap();
    c.put("/t/k", "1", None).await.unwrap();
    let idle = Duration::from_secs(3);

    tokio::time::sleep(idle).await;
    let got = soon("get", c.get("/t/k", None))
        .await
        .expect("get after expiry");
    assert_eq!(got.kvs()[0].value(), b"1");

    // Several calls at once find the token expired: all go through.
    tokio::time::sleep(idle).await;
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.put(format!("/t/{i}"), "x", None).await })
        })
        .collect();
    for call in calls {
        soon("put", call).await.unwrap().expect("put after expiry");
    }

    // A watch (etcd says "permission denied" for its expired token) and a keep-alive.
    tokio::time::sleep(idle).await;
    let (_, mut stream) = soon("watch", c.watch("/t/k", None)).await.unwrap();
    let created = stream.message().await.unwrap().unwrap();
    assert!(!created.canceled(), "{}", created.cancel_reason());
    c.put("/t/k", "2", None).await.unwrap();
    assert_eq!(events(&mut stream, 1).await[0].kv().unwrap().value(), b"2");
    tokio::time::sleep(idle).await;
    let lease = c.lease_grant(5, None).await.expect("grant after expiry");
    tokio::time::sleep(idle).await;
    soon("keep-alive", c.lease_keep_alive(lease.id()))
        .await
        .expect("keep-alive after expiry");
}

#[tokio::test]
async fn tls_with_the_right_ca_and_not_with_another() {
    if !have_etcd() {
        return;
    }
    let pki = Pki::make();
    let etcd = Etcd::start(Serve::Tls, Some(&pki), &[]);
    let tls = || Some(ConnectOptions::new().with_tls(pki.tls(&pki.ca, false)));
    let c = Client::connect([&etcd.url], tls()).await.unwrap();
    c.put("/tls/k", "v", None).await.expect("put over TLS");
    assert_eq!(c.get("/tls/k", None).await.unwrap().count(), 1);
    // HOST:PORT with TLS options is TLS too.
    let hostport = format!("127.0.0.1:{}", etcd.port);
    let c = Client::connect([&hostport], tls()).await.unwrap();
    c.status().await.expect("status over TLS");

    let other = Some(ConnectOptions::new().with_tls(pki.tls(&pki.other_ca, false)));
    let c = Client::connect([&etcd.url], other).await.unwrap();
    let e = soon("status", c.status())
        .await
        .expect_err("an untrusted server");
    let text = chain(&e);
    println!("another CA: {e}\n  chain: {text}");
    assert!(
        text.contains("UnknownIssuer") && text.contains("invalid peer certificate"),
        "{text}"
    );
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");

    // TLS options with http:// are refused, not downgraded; plaintext to a TLS port fails.
    let http = etcd.url.replace("https://", "http://");
    let e = Client::connect([&http], tls()).await.unwrap_err();
    assert!(matches!(e, Error::InvalidEndpoint { .. }), "{e}");
    let c = connect(&http).await;
    let e = soon("status", c.status())
        .await
        .expect_err("plaintext to TLS");
    println!("plaintext to a TLS port: {}", chain(&e));
}

#[tokio::test]
async fn tls_with_a_client_certificate() {
    if !have_etcd() {
        return;
    }
    let pki = Pki::make();
    let etcd = Etcd::start(Serve::MutualTls, Some(&pki), &[]);
    let with_cert = Some(ConnectOptions::new().with_tls(pki.tls(&pki.ca, true)));
    let c = Client::connect([&etcd.url], with_cert).await.unwrap();
    c.put("/mtls/k", "v", None)
        .await
        .expect("put with a client certificate");
    let (_, mut stream) = c.watch("/mtls/k", None).await.unwrap();
    assert!(stream.message().await.unwrap().unwrap().created());

    let without = Some(ConnectOptions::new().with_tls(pki.tls(&pki.ca, false)));
    let c = Client::connect([&etcd.url], without).await.unwrap();
    let e = soon("status", c.status())
        .await
        .expect_err("no client certificate");
    println!("no client certificate: {}", chain(&e));
    assert!(matches!(e, Error::Status(_)), "{e}");
}

#[tokio::test]
async fn a_dead_endpoint_among_live_ones() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::plain(&[]);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
    let c = Client::connect([dead.as_str(), &etcd.url], Some(options))
        .await
        .unwrap();
    for i in 0..5 {
        soon("put", c.put(format!("/d/{i}"), "v", None))
            .await
            .expect("put with the first endpoint dead");
    }
    let all = c
        .get("/d/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(all.count(), 5);
    let (_, mut stream) = c
        .watch("/d/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(stream.message().await.unwrap().unwrap().created());
    let lease = c.lease_grant(5, None).await.unwrap();
    c.lease_keep_alive(lease.id()).await.expect("keep-alive");

    // Only dead endpoints: the error says why.
    let c = Client::connect([dead.as_str()], None).await.unwrap();
    let e = soon("get", c.get("k", None)).await.unwrap_err();
    println!("dead endpoint: {}", chain(&e));
    assert!(chain(&e).contains("Connection refused"), "{e}");
}

#[tokio::test]
async fn keepalives_end_the_streams_of_a_silent_etcd() {
    if !have_etcd() {
        return;
    }
    // etcd refuses pings more often than --grpc-keepalive-min-time (5 s by default).
    let etcd = Etcd::plain(&["--grpc-keepalive-min-time=1s"]);
    let options = ConnectOptions::new()
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1))
        .with_keep_alive_while_idle(true);
    let c = Client::connect([&etcd.url], Some(options)).await.unwrap();
    let (_watcher, mut watch) = c.watch("/k", None).await.unwrap();
    assert!(watch.message().await.unwrap().unwrap().created());
    let lease = c.lease_grant(60, None).await.unwrap();
    let (_keeper, mut answers) = c.lease_keep_alive(lease.id()).await.unwrap();
    // Stopped, etcd keeps its connections open but answers nothing, not even pings.
    etcd.signal("STOP");
    let started = Instant::now();
    let e = soon("the watch ends", watch.message())
        .await
        .expect_err("a broken watch");
    println!(
        "silent etcd, watch: {} after {:?}",
        chain(&e),
        started.elapsed()
    );
    let e = soon("the keep-alive ends", answers.message())
        .await
        .expect_err("a broken keep-alive stream");
    println!("silent etcd, keep-alive: {}", chain(&e));
    assert!(started.elapsed() < Duration::from_secs(10));
    etcd.signal("CONT");
}
