//! `busbarctl`: the cluster operator's tool.
//!
//! Each group of subcommands lives in its own module of the gateway library (`certs`, ...) and
//! is one variant of [`Command`]; this file only parses, dispatches and picks the exit code.

use std::io;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use busbar_gateway::certs::{self, CertsCmd};
use busbar_gateway::chainctl::{self, ChainCmd, EtcdArgs};

/// sysexits' EX_USAGE: bad flags or arguments.
const EX_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(name = "busbarctl", version, about = "Operate a busbar cluster")]
struct Cli {
    #[command(flatten)]
    etcd: EtcdArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The cluster CA and the certificates of agents, gateways and operators.
    #[command(subcommand)]
    Certs(CertsCmd),
    /// The cluster's adapter chains in etcd: validate, apply, get, history, rollback, status.
    #[command(subcommand)]
    Chain(ChainCmd),
    /// The nodes registered in etcd, with the chain revision each runs.
    Nodes,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version also arrive here, and are not failures.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let (result, usage) = match &cli.command {
        Command::Certs(cmd) => split(certs::run(cmd, &mut io::stdout().lock()), |e| e.is_usage()),
        Command::Chain(cmd) => split(
            chainctl::run_chain(&cli.etcd, cmd, &mut io::stdout().lock()),
            |e| e.is_usage(),
        ),
        Command::Nodes => split(
            chainctl::run_nodes(&cli.etcd, &mut io::stdout().lock()),
            |e| e.is_usage(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("busbarctl: {e}");
            if usage {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The error as text, and whether it is a usage error (exit 64).
fn split<E: std::fmt::Display>(
    r: Result<(), E>,
    is_usage: impl Fn(&E) -> bool,
) -> (Result<(), String>, bool) {
    match r {
        Ok(()) => (Ok(()), false),
        Err(e) => {
            let usage = is_usage(&e);
            (Err(e.to_string()), usage)
        }
    }
}
