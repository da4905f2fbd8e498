//! `busbarctl certs`: the operator's side of the cluster PKI.
//!
//! `init` makes the cluster CA once; `issue` signs one certificate per node, gateway or operator,
//! with the role in the subject OU. This module is only the command line and the words printed:
//! the certificates themselves are made by [`busbar_tls::pki`], the same code the agent's
//! TLS tests run, so what the tests prove is what operators get. See `deploy/certs.md`.

use std::io::{self, Write};
use std::path::PathBuf;

use busbar_tls::pki::{CertDir, IssueRequest, PkiError, MAX_DAYS};
use busbar_tls::Role;
use clap::{Args, Subcommand};

/// `busbarctl certs ...`
#[derive(Debug, Subcommand)]
pub enum CertsCmd {
    /// Create the cluster CA: DIR/ca.pem and DIR/ca-key.pem (do this once, on a secure machine).
    Init(InitArgs),
    /// Issue a certificate signed by the cluster CA: DIR/NAME.pem and DIR/NAME-key.pem.
    Issue(IssueArgs),
}

/// `busbarctl certs init`
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory for the CA files (created, mode 0700, if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Replace an existing CA. Every certificate it issued stops being accepted.
    #[arg(long)]
    pub force: bool,
}

/// `busbarctl certs issue`
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Directory holding the cluster CA; the new files are written there too.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Who the certificate is for: the node name for an agent. Becomes the CN and a DNS SAN.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// What the holder may do: agent, gateway, client (a Docker client of a gateway) or adapter
    /// (a client that may also use the gateway's adapter API).
    #[arg(long, value_name = "ROLE")]
    pub role: Role,
    /// Another name or address the holder is reached at (repeatable). IP literals become IP SANs.
    #[arg(long = "san", value_name = "HOST")]
    pub sans: Vec<String>,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_DAYS)))]
    pub days: u32,
    /// Replace DIR/NAME.pem and DIR/NAME-key.pem if they exist (re-issuing, e.g. before expiry).
    #[arg(long)]
    pub force: bool,
}

/// Why a `certs` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("cannot write to standard output: {0}")]
    Output(#[source] io::Error),
}

impl CertsError {
    /// The operator passed something that can never work (exit 64, EX_USAGE), as opposed to a
    /// state of the files or the machine.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            CertsError::Pki(
                PkiError::InvalidName { .. }
                    | PkiError::InvalidSan { .. }
                    | PkiError::InvalidDays { .. }
            )
        )
    }
}

/// Runs one `certs` command, printing one line per file written to `out`.
pub fn run(cmd: &CertsCmd, out: &mut dyn Write) -> Result<(), CertsError> {
    match cmd {
        CertsCmd::Init(args) => init(args, out),
        CertsCmd::Issue(args) => issue(args, out),
    }
}

fn init(args: &InitArgs, out: &mut dyn Write) -> Result<(), CertsError> {
    let ca = CertDir::new(&args.dir).init_ca(args.force)?;
    let mut say = |line: String| writeln!(out, "{line}").map_err(CertsError::Output);
    if ca.replaced {
        say("replaced the previous cluster CA: certificates it issued are no longer accepted; re-issue them".into())?;
    }
    say(format!(
        "wrote {}: cluster CA certificate, cluster id {}, valid until {} (copy it to every node and gateway)",
        ca.cert.display(),
        ca.cluster_id,
        ca.not_after.date()
    ))?;
    say(format!(
        "wrote {}: CA private key, mode 0600 (keep it on this machine: whoever holds it controls the cluster)",
        ca.key.display()
    ))
}

fn issue(args: &IssueArgs, out: &mut dyn Write) -> Result<(), CertsError> {
    let req = IssueRequest {
        name: args.name.clone(),
        role: args.role,
        sans: args.sans.clone(),
        days: args.days,
        force: args.force,
    };
    let issued = CertDir::new(&args.dir).issue(&req)?;
    let mut say = |line: String| writeln!(out, "{line}").map_err(CertsError::Output);
    say(format!(
        "wrote {}: certificate CN={}, role {}, SANs {}, valid until {}",
        issued.cert.display(),
        issued.identity.name,
        issued.identity.role,
        issued.sans.join(", "),
        issued.not_after.date()
    ))?;
    say(format!(
        "wrote {}: private key, mode 0600 (copy it only to the machine that runs {})",
        issued.key.display(),
        issued.identity.name
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use clap::Parser;

    use super::*;

    /// Parses like busbarctl does below `certs`.
    #[derive(Debug, Parser)]
    struct Certs {
        #[command(subcommand)]
        cmd: CertsCmd,
    }

    fn certs(args: &[&str]) -> Result<String, CertsError> {
        let parsed = Certs::try_parse_from(std::iter::once("certs").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?} does not parse: {e}"));
        let mut out = Vec::new();
        run(&parsed.cmd, &mut out)?;
        Ok(String::from_utf8(out).expect("utf-8 output"))
    }

    #[test]
    fn init_then_issue_writes_the_documented_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let d = dir.to_str().unwrap();

        let out = certs(&["init", "--dir", d]).unwrap();
        assert!(
            out.contains(&format!("wrote {d}/ca.pem: cluster CA certificate")),
            "{out}"
        );
        assert!(
            out.contains(&format!("wrote {d}/ca-key.pem: CA private key, mode 0600")),
            "{out}"
        );

        let out = certs(&[
            "issue",
            "--dir",
            d,
            "--name",
            "node1",
            "--role",
            "agent",
            "--san",
            "10.0.0.5",
            "--san",
            "node1.lan",
        ])
        .unwrap();
        assert!(
            out.contains(&format!(
                "wrote {d}/node1.pem: certificate CN=node1, role agent, SANs node1, 10.0.0.5, node1.lan"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!("wrote {d}/node1-key.pem: private key, mode 0600")),
            "{out}"
        );
        for key in ["ca-key.pem", "node1-key.pem"] {
            let mode = std::fs::metadata(dir.join(key))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );

        let id = CertDir::new(&dir).tls_files("node1").identity().unwrap();
        assert_eq!((id.name.as_str(), id.role), ("node1", Role::Agent));
    }

    #[test]
    fn init_refuses_to_overwrite_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_str().unwrap();
        certs(&["init", "--dir", d]).unwrap();
        let err = certs(&["init", "--dir", d]).unwrap_err();
        assert!(
            err.to_string().contains("already holds a cluster CA"),
            "{err}"
        );
        assert!(!err.is_usage());
        let out = certs(&["init", "--dir", d, "--force"]).unwrap();
        assert!(out.starts_with("replaced the previous cluster CA"), "{out}");
    }

    #[test]
    fn issue_without_a_ca_says_how_to_make_one() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_str().unwrap();
        let err = certs(&["issue", "--dir", d, "--name", "gw", "--role", "gateway"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("no cluster CA in {d}: run `busbarctl certs init --dir {d}` first")
        );
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_str().unwrap();
        certs(&["init", "--dir", d]).unwrap();
        let err = certs(&["issue", "--dir", d, "--name", "ca", "--role", "agent"]).unwrap_err();
        assert!(err.is_usage(), "{err}");

        let err = Certs::try_parse_from([
            "certs", "issue", "--dir", d, "--name", "x", "--role", "admin",
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("expected agent, gateway, client or adapter"),
            "{err}"
        );
        assert!(Certs::try_parse_from([
            "certs", "issue", "--dir", d, "--name", "x", "--role", "agent", "--days", "0"
        ])
        .is_err());
    }
}
