//! `busbarctl status`: the cluster's status from a gateway, in one terminal screen
//! (`busbar_status::text::screen`), as JSON (`--json`: the gateway's `/status.json` as it
//! came), or redrawn every few seconds (`--watch`) until Ctrl-C.
//!
//! It reads the gateway's metrics listener (`--metrics-listen`), where the status page is
//! served: `http://` on loopback, `https://` elsewhere, with the cluster CA and, when the
//! gateway verifies clients (`--tlsverify`), a certificate it accepts (as `docker
//! --tlscacert/--tlscert/--tlskey`). Every wait has a deadline (`--timeout`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use busbar_status::Status;

/// The largest status document read (a cluster of thousands of nodes fits).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// `busbarctl status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The gateway's metrics listener (its --metrics-listen): http://127.0.0.1:PORT on
    /// loopback, https://HOST:PORT elsewhere.
    #[arg(
        long,
        env = "BUSBAR_STATUS_URL",
        value_name = "URL",
        default_value = "http://127.0.0.1:9323"
    )]
    pub url: String,
    /// Print the status document (the gateway's /status.json) instead of the screen.
    #[arg(long)]
    pub json: bool,
    /// Redraw every SECS seconds (default 2) until Ctrl-C.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<f64>,
    /// Seconds to wait for the gateway's answer.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub timeout: f64,
    /// With https: the CA that signed the gateway's certificate (default: ca.pem in
    /// $DOCKER_CERT_PATH, else ~/.docker).
    #[arg(long, value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// With https: a client certificate, for a gateway with --tlsverify (default: cert.pem
    /// there, if it exists).
    #[arg(long, value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// Its key (default: key.pem there).
    #[arg(long, value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("--url {0}: expected http://HOST:PORT or https://HOST:PORT")]
    Url(String),
    #[error("--{0} must be a positive number of seconds")]
    Seconds(&'static str),
    #[error("{what} {}: {reason}", path.display())]
    Tls {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("cannot reach the gateway at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the gateway at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("the gateway at {url} answered {status}: {message}")]
    Status {
        url: String,
        status: StatusCode,
        message: String,
    },
    #[error("the gateway at {url} sent a status this busbarctl cannot read: {reason}")]
    Body { url: String, reason: String },
    #[error("writing the output: {0}")]
    Output(std::io::Error),
}

impl StatusError {
    /// A mistake in the command line (exit 64).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            StatusError::Url(_) | StatusError::Seconds(_) | StatusError::Tls { .. }
        )
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A client of one gateway's `/status.json`.
struct Fetcher {
    url: String,
    client: HttpClient,
    timeout: Duration,
}

impl Fetcher {
    fn new(args: &StatusArgs) -> Result<Fetcher, StatusError> {
        let base = args.url.trim_end_matches('/');
        let uri: Uri = base
            .parse()
            .map_err(|_| StatusError::Url(args.url.clone()))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(StatusError::Url(args.url.clone())),
        };
        if uri.host().is_none() {
            return Err(StatusError::Url(args.url.clone()));
        }
        let timeout = seconds(args.timeout, "timeout")?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = if https {
            builder
                .with_tls_config(client_tls(args)?)
                .https_only()
                .enable_http1()
                .wrap_connector(http)
        } else {
            // No TLS configuration is used for http:// (an empty trust store).
            builder
                .with_tls_config(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
                .https_or_http()
                .enable_http1()
                .wrap_connector(http)
        };
        Ok(Fetcher {
            url: format!("{base}/status.json"),
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        })
    }

    /// The status document: its bytes as they came, and read.
    async fn fetch(&self) -> Result<(Bytes, Status), StatusError> {
        let req = Request::get(&self.url)
            .body(Empty::new())
            .map_err(|_| StatusError::Url(self.url.clone()))?;
        let exchange = async {
            let rsp = self
                .client
                .request(req)
                .await
                .map_err(|e| StatusError::Unreachable {
                    url: self.url.clone(),
                    reason: error_chain(&e),
                })?;
            let status = rsp.status();
            let body = http_body_util::Limited::new(rsp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| StatusError::Body {
                    url: self.url.clone(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok::<_, StatusError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| StatusError::Timeout {
                url: self.url.clone(),
                timeout: self.timeout,
            })??;
        if !status.is_success() {
            let message = String::from_utf8_lossy(&body).trim().to_owned();
            let message = if status == StatusCode::NOT_FOUND {
                format!("{message} (a gateway serves its status in cluster mode only; is this its --metrics-listen?)")
            } else {
                message
            };
            return Err(StatusError::Status {
                url: self.url.clone(),
                status,
                message,
            });
        }
        let doc: Status = serde_json::from_slice(&body).map_err(|e| StatusError::Body {
            url: self.url.clone(),
            reason: e.to_string(),
        })?;
        Ok((body, doc))
    }
}

fn seconds(s: f64, flag: &'static str) -> Result<Duration, StatusError> {
    if s.is_finite() && s > 0.0 && s < 1e6 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(StatusError::Seconds(flag))
    }
}

/// Where the Docker CLI keeps its certificates.
fn cert_dir() -> PathBuf {
    std::env::var_os("DOCKER_CERT_PATH")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .unwrap_or_default()
}

fn client_tls(args: &StatusArgs) -> Result<rustls::ClientConfig, StatusError> {
    let dir = cert_dir();
    let ca = args.tlscacert.clone().unwrap_or_else(|| dir.join("ca.pem"));
    let bad = |what: &'static str, path: &Path, reason: String| StatusError::Tls {
        what,
        path: path.to_owned(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(&ca).map_err(|e| bad("--tlscacert", &ca, e.to_string()))?;
    for c in certs {
        let c = c.map_err(|e| bad("--tlscacert", &ca, e.to_string()))?;
        roots
            .add(c)
            .map_err(|e| bad("--tlscacert", &ca, e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("--tlscacert", &ca, "no certificate in it".into()));
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    // A client certificate when given, or when the default one exists.
    let cert = args.tlscert.clone().or_else(|| {
        let default = dir.join("cert.pem");
        default.exists().then_some(default)
    });
    let Some(cert) = cert else {
        return Ok(builder.with_no_client_auth());
    };
    let key = args.tlskey.clone().unwrap_or_else(|| dir.join("key.pem"));
    let chain = CertificateDer::pem_file_iter(&cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad("--tlscert", &cert, e.to_string()))?;
    let key_der =
        PrivateKeyDer::from_pem_file(&key).map_err(|e| bad("--tlskey", &key, e.to_string()))?;
    builder
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| bad("--tlscert", &cert, e.to_string()))
}

/// An error with its causes, one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The terminal's width in columns (`COLUMNS`, else `stty size`), 0 when stdout is not a
/// terminal (no line is cut), 100 when it cannot be told.
fn width() -> usize {
    if !std::io::stdout().is_terminal() {
        return 0;
    }
    if let Some(n) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return n;
    }
    std::fs::File::open("/dev/tty")
        .ok()
        .and_then(|tty| {
            std::process::Command::new("stty")
                .arg("size")
                .stdin(tty)
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
        })
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
        })
        .unwrap_or(100)
}

/// What one look at the status prints.
fn render(body: &[u8], status: &Status, json: bool, color: bool) -> Vec<u8> {
    if json {
        let mut out = body.to_vec();
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out
    } else {
        busbar_status::text::screen(status, width(), color).into_bytes()
    }
}

pub fn run(args: &StatusArgs, out: &mut dyn Write) -> Result<(), StatusError> {
    let fetcher = Fetcher::new(args)?;
    let every = args.watch.map(|s| seconds(s, "watch")).transpose()?;
    let color =
        !args.json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(async {
            let Some(every) = every else {
                let (body, status) = fetcher.fetch().await?;
                return out
                    .write_all(&render(&body, &status, args.json, color))
                    .map_err(StatusError::Output);
            };
            let interrupted = tokio::signal::ctrl_c();
            tokio::pin!(interrupted);
            loop {
                // Ctrl-C ends the watch at once, also in the middle of a fetch.
                let fetched = tokio::select! {
                    _ = &mut interrupted => return Ok(()),
                    fetched = fetcher.fetch() => fetched,
                };
                let shown = match fetched {
                    Ok((body, status)) => render(&body, &status, args.json, color),
                    // The gateway may come back: say why, and keep trying.
                    Err(e) => format!("busbarctl: {e}\n").into_bytes(),
                };
                // Home, clear, then the screen (JSON lines follow each other).
                if !args.json && color {
                    out.write_all(b"\x1b[H\x1b[2J")
                        .map_err(StatusError::Output)?;
                }
                out.write_all(&shown).map_err(StatusError::Output)?;
                out.flush().map_err(StatusError::Output)?;
                tokio::select! {
                    _ = &mut interrupted => return Ok(()),
                    _ = tokio::time::sleep(every) => {}
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> StatusArgs {
        StatusArgs {
            url: url.into(),
            json: false,
            watch: None,
            timeout: 1.0,
            tlscacert: None,
            tlscert: None,
            tlskey: None,
        }
    }

    #[test]
    fn a_url_that_is_not_http_is_a_usage_error() {
        let err = run(&args("tcp://127.0.0.1:9323"), &mut Vec::new()).unwrap_err();
        assert!(err.is_usage());
        assert!(
            err.to_string().contains("expected http://HOST:PORT"),
            "{err}"
        );
        let mut a = args("http://127.0.0.1:9323");
        a.timeout = 0.0;
        assert!(run(&a, &mut Vec::new()).unwrap_err().is_usage());
    }

    #[test]
    fn https_without_a_ca_says_which_file() {
        let mut a = args("https://127.0.0.1:9323");
        a.tlscacert = Some("/nonexistent/ca.pem".into());
        let err = run(&a, &mut Vec::new()).unwrap_err();
        assert!(err.is_usage());
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_gateway_that_does_not_listen_is_named() {
        // A port just bound and released: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = run(&args(&format!("http://127.0.0.1:{port}")), &mut Vec::new()).unwrap_err();
        assert!(!err.is_usage());
        assert!(
            err.to_string().starts_with(&format!(
                "cannot reach the gateway at http://127.0.0.1:{port}/status.json"
            )),
            "{err}"
        );
    }

    #[test]
    fn json_is_printed_as_the_gateway_sent_it() {
        let body = br#"{"format":1,"generated_at_ms":0,"gateway":{"version":"x","probe_interval_s":3.0,"probe_timeout_s":3.0,"requests":0,"requests_4xx":0,"requests_5xx":0},"nodes":[],"errors":[]}"#;
        let status: Status = serde_json::from_slice(body).unwrap();
        let out = render(body, &status, true, false);
        assert_eq!(&out[..out.len() - 1], &body[..]);
        let screen = String::from_utf8(render(body, &status, false, false)).unwrap();
        assert!(screen.contains("0 of 0 nodes healthy"), "{screen}");
        assert!(screen.contains("(no node known)"), "{screen}");
    }
}
