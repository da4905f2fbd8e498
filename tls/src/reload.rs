//! Certificates replaced while serving: every TLS configuration built here from files takes
//! its own certificate and key through a [`Reloadable`] resolver, and [`reload_all`] (the
//! binaries call it on SIGHUP) reads them again. New handshakes present the new certificate;
//! open connections keep the session they have. A file that fails its checks (missing, not
//! PEM, out of its validity, a key that does not match, not a busbar certificate where one is
//! needed) is refused and the certificate in use stays. Trust roots (the CAs) are read once:
//! a new CA takes a restart.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use crate::identity::peer_identity;
use crate::{check_validity, load_key, now, read_certs, TlsError};

/// One certificate and key, from files, replaceable.
#[derive(Debug)]
pub struct Reloadable {
    cert: PathBuf,
    key: PathBuf,
    /// Whether the certificate must be a busbar one (the gateway-agent hop).
    busbar: bool,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

/// Every [`Reloadable`] still in use in this process.
static LOADED: Mutex<Vec<Weak<Reloadable>>> = Mutex::new(Vec::new());

/// What one [`reload_all`] did to one certificate.
#[derive(Debug)]
pub struct Reloaded {
    pub cert: PathBuf,
    /// `Ok(true)`: a different certificate is in use now; `Ok(false)`: the files had not
    /// changed; `Err`: refused, the previous one stays.
    pub outcome: Result<bool, TlsError>,
}

impl Reloadable {
    /// Reads and checks the files; registers the result for [`reload_all`].
    pub(crate) fn load(
        cert: PathBuf,
        key: PathBuf,
        busbar: bool,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<Reloadable>, TlsError> {
        let first = read(&cert, &key, busbar, &provider)?;
        let me = Arc::new(Reloadable {
            cert,
            key,
            busbar,
            provider,
            current: RwLock::new(first),
        });
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        loaded.retain(|w| w.strong_count() > 0);
        loaded.push(Arc::downgrade(&me));
        Ok(me)
    }

    fn reload(&self) -> Result<bool, TlsError> {
        let new = read(&self.cert, &self.key, self.busbar, &self.provider)?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let changed = current.cert != new.cert;
        *current = new;
        Ok(changed)
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn read(
    cert: &std::path::Path,
    key: &std::path::Path,
    busbar: bool,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certs("certificate", cert)?;
    check_validity("certificate", cert, &chain[0], now())?;
    if busbar {
        peer_identity(&chain[0]).map_err(|source| TlsError::NotBusbarCert {
            path: cert.to_owned(),
            source,
        })?;
    }
    let key = load_key(key, cert, &chain, provider)?;
    Ok(Arc::new(CertifiedKey::from_der(chain, key, provider)?))
}

/// Reads every certificate in use again (see the module docs), in the order they were loaded.
pub fn reload_all() -> Vec<Reloaded> {
    let live: Vec<Arc<Reloadable>> = {
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        loaded.retain(|w| w.strong_count() > 0);
        loaded.iter().filter_map(Weak::upgrade).collect()
    };
    live.iter()
        .map(|r| Reloaded {
            cert: r.cert.clone(),
            outcome: r.reload(),
        })
        .collect()
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for Reloadable {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
