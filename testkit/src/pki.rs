//! Certificates made in the test: a busbar cluster CA in a temporary directory, by
//! `busbar_tls::pki` (what `busbarctl certs` runs), with certificates issued by name and role;
//! and the TLS settings built from them: the gateway's toward agents, a `--tls-listen`
//! listener's for Docker clients, a Docker client's.

use std::sync::Arc;

use busbar_http::tls::ServerTls;
use busbar_tls::pki::{CertDir, IssueRequest};
use busbar_tls::{ClientTlsFiles, Role, TlsFiles};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;

/// A cluster CA and its certificates, in a temporary directory removed on drop.
pub struct TestPki {
    certs: CertDir,
    _dir: tempfile::TempDir,
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

impl TestPki {
    /// A new cluster CA.
    pub fn new() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("busbar-test-pki")
            .tempdir()
            .expect("a temporary directory");
        let certs = CertDir::new(dir.path().join("certs"));
        certs.init_ca(false).expect("create the cluster CA");
        TestPki { certs, _dir: dir }
    }

    /// Issues (once) a certificate for `name` with `role`, and returns its files.
    pub fn issue(&self, name: &str, role: Role) -> TlsFiles {
        if !self.certs.cert(name).exists() {
            self.certs
                .issue(&IssueRequest {
                    name: name.to_owned(),
                    role,
                    sans: vec![],
                    days: 1,
                    force: false,
                })
                .unwrap_or_else(|e| panic!("issue {name} ({role}): {e}"));
        }
        self.certs.tls_files(name)
    }

    /// The TLS client configuration of a gateway (certificate `gateway`, role gateway), which
    /// accepts agents only: what `busbar-gateway` dials agents with.
    pub fn gateway_tls(&self) -> Arc<rustls::ClientConfig> {
        let files = self.issue("gateway", Role::Gateway);
        busbar_tls::client_config(&files, Role::Agent).expect("the gateway's TLS configuration")
    }
}

// === TLS for Docker clients ===

/// The name of the certificate a `--tls-listen` listener shows (a DNS SAN: clients connect
/// with this server name).
pub const FRONT: &str = "busbar-front";

impl TestPki {
    /// A `--tls-listen --tlsverify` listener's TLS with this CA as `--tlscacert` (so clients
    /// need the client role) and a certificate for [`FRONT`]: what `busbar_agent::run`
    /// builds from the flags.
    pub fn docker_tls(&self) -> Arc<ServerTls> {
        self.docker_tls_for(FRONT)
    }

    /// [`TestPki::docker_tls`] with a certificate for `name` (`localhost`, for a client that
    /// dials a URL).
    pub fn docker_tls_for(&self, name: &str) -> Arc<ServerTls> {
        let front = self.issue(name, Role::Gateway);
        let files = ClientTlsFiles {
            ca: Some(front.ca),
            cert: front.cert,
            key: front.key,
        };
        let config = busbar_tls::docker_server_config(&files).expect("the listener's TLS");
        ServerTls::new(
            config,
            busbar_agent::run::identify,
            "test: client certificates from the test CA".into(),
        )
    }

    /// A Docker client's TLS (`--tlsverify --tlscacert ca.pem`), presenting the certificate of
    /// `name` (issued now with `role`), or none.
    pub fn docker_client(&self, me: Option<(&str, Role)>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in
            busbar_tls::read_certs("CA certificate", &self.certs.ca_cert()).expect("the test CA")
        {
            roots.add(ca).expect("a usable CA");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring's default versions")
        .with_root_certificates(roots);
        Arc::new(match me {
            None => builder.with_no_client_auth(),
            Some((name, role)) => {
                let files = self.issue(name, role);
                let chain = busbar_tls::read_certs("certificate", &files.cert).expect("a cert");
                let key = PrivateKeyDer::from_pem_file(&files.key).expect("a key");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("a matching key")
            }
        })
    }
}
