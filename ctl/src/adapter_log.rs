//! `busbarctl adapter log NODE [ADAPTER] [-f]`: a node's hook call log, read through a
//! gateway, without logging into the node.
//!
//! The call is the gateway's adapter API (`GET /_busbar/v1/nodes/NODE/_busbar/hook-log`,
//! `?adapter=NAME`, `&follow=1`), so it needs what that API needs: the gateway's
//! `--tls-listen --tlsverify` and a certificate with the `adapter` role (`busbarctl certs
//! issue --role adapter`). The gateway carries it to the node's agent over the hop as it
//! carries any call; the agent answers with its log's lines (see `busbar_agent::hooks::log`),
//! printed here as they come.

use std::io::Write;
use std::path::PathBuf;

use busbar_adapter::gateway::{encode_segment, error_message, Gateway, GatewayError};
use http::Method;
use http_body_util::BodyExt;

/// `busbarctl adapter log`.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// The node whose log to read.
    pub node: String,
    /// Only this adapter's calls (its name in the chain).
    pub adapter: Option<String>,
    /// Keep printing new calls as they come (until interrupted).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The gateway: https://HOST[:PORT], its --tls-listen (with --tlsverify).
    #[arg(long, env = "BUSBAR_GATEWAY", value_name = "URL")]
    pub gateway: String,
    /// The cluster CA (default: ca.pem in $DOCKER_CERT_PATH, else ~/.docker).
    #[arg(long, value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// A certificate with the adapter role (default: cert.pem there).
    #[arg(long, value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// Its key (default: key.pem there).
    #[arg(long, value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error("writing the output: {0}")]
    Output(std::io::Error),
}

impl LogError {
    /// A mistake in the command line (exit 64).
    pub fn is_usage(&self) -> bool {
        matches!(self, LogError::Gateway(GatewayError::Url(_)))
    }
}

/// Where the Docker CLI keeps its certificates.
fn cert_dir() -> PathBuf {
    std::env::var_os("DOCKER_CERT_PATH")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .unwrap_or_default()
}

pub fn run(args: &LogArgs, out: &mut dyn Write) -> Result<(), LogError> {
    let dir = cert_dir();
    let pick =
        |given: &Option<PathBuf>, name: &str| given.clone().unwrap_or_else(|| dir.join(name));
    let gateway = Gateway::new(
        &args.gateway,
        &pick(&args.tlscacert, "ca.pem"),
        &pick(&args.tlscert, "cert.pem"),
        &pick(&args.tlskey, "key.pem"),
    )?;
    let mut path = String::from("/_busbar/hook-log");
    let mut sep = '?';
    if let Some(adapter) = &args.adapter {
        path.push_str(&format!("{sep}adapter={}", encode_segment(adapter)));
        sep = '&';
    }
    if args.follow {
        path.push_str(&format!("{sep}follow=1"));
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(async {
            let rsp = gateway
                .engine(&args.node)
                .send(Method::GET, &path, busbar_adapter::gateway::empty())
                .await?;
            let status = rsp.status();
            let mut body = rsp.into_body();
            if !status.is_success() {
                let bytes = body
                    .collect()
                    .await
                    .map_err(|e| GatewayError::Body(e.to_string()))?
                    .to_bytes();
                return Err(GatewayError::Status {
                    status,
                    message: error_message(&bytes),
                }
                .into());
            }
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| GatewayError::Body(e.to_string()))?;
                if let Some(data) = frame.data_ref() {
                    out.write_all(data).map_err(LogError::Output)?;
                    out.flush().map_err(LogError::Output)?;
                }
            }
            Ok(())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_that_is_not_https_is_a_usage_error() {
        let args = LogArgs {
            node: "node1".into(),
            adapter: None,
            follow: false,
            gateway: "tcp://gw1:2376".into(),
            tlscacert: None,
            tlscert: None,
            tlskey: None,
        };
        let err = run(&args, &mut Vec::new()).unwrap_err();
        assert!(err.is_usage());
        assert!(
            err.to_string().contains("expected https://HOST[:PORT]"),
            "{err}"
        );
    }
}
