//! `busbarctl`: the cluster operator's tool.
//!
//! Each group of subcommands lives in its own module (`certs`, `chain`) and is one variant of
//! [`Command`]; this file only parses, dispatches and picks the exit code.
//!
//! # Layout
//! - `adapter`: `busbarctl adapter test`: an adapter checked against the protocol.
//! - `adapter_log`: `busbarctl adapter log`: a node's hook call log, through a gateway.
//! - `certs`: `busbarctl certs`: the cluster CA and role-carrying certificates.
//! - `chain`: `busbarctl chain` and `busbarctl nodes`: adapter chains and nodes in etcd.
//! - `status`: `busbarctl status`: the cluster's status from a gateway, on one screen.

mod adapter;
mod adapter_log;
mod certs;
mod chain;
mod status;

use std::io;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use busbar_runtime::EX_USAGE;

use adapter::AdapterCmd;
use certs::CertsCmd;
use chain::{ChainCmd, EtcdArgs};

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
    /// Adapters: `adapter test URL` checks one against the protocol; `adapter log NODE`
    /// prints a node's hook call log.
    #[command(subcommand)]
    Adapter(AdapterCmd),
    /// The cluster's status from a gateway (its --metrics-listen): nodes, health, chain
    /// revisions, adapter error rates, the last errors; --json, --watch.
    Status(status::StatusArgs),
}

fn main() -> ExitCode {
    if let Some(code) = busbar_runtime::manual::generate_if_asked::<Cli>() {
        return code;
    }
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
            chain::run_chain(&cli.etcd, cmd, &mut io::stdout().lock()),
            |e| e.is_usage(),
        ),
        Command::Nodes => split(chain::run_nodes(&cli.etcd, &mut io::stdout().lock()), |e| {
            e.is_usage()
        }),
        Command::Adapter(AdapterCmd::Test(args)) => split(
            adapter::run_adapter(args, cli.etcd.json, &mut io::stdout().lock()),
            |e| e.is_usage(),
        ),
        Command::Status(args) => split(status::run(args, &mut io::stdout().lock()), |e| {
            e.is_usage()
        }),
        Command::Adapter(AdapterCmd::Log(args)) => {
            split(adapter_log::run(args, &mut io::stdout().lock()), |e| {
                e.is_usage()
            })
        }
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
